"""``fcnx deploy``: a trained model -> the fastest artifact this machine runs within the
user's quality budget, judged on the user's images.

candidates.py  what this machine can run (the backend registry's precisions, CPU flags, GPU)
split.py       the user's images split, seeded, into disjoint calibration and judging sets
cache.py       exports and measurements cached by what they depend on (a killed deploy resumes)
build.py       one candidate exported through its parity gate (a failed gate is a rejected row)
measure.py     every passing candidate's settings timed side by side through the Segmenter
rule.py        the winner: the fastest within budget (Keras rows are baselines, never chosen)
folder.py      DEPLOY/ written atomically: the artifact, deploy.json, report.html
run.py         the whole job
The runtime side (``load("DEPLOY/")``, the machine check) is runtime/deployed.py.
"""
