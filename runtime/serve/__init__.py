"""``fcnx serve``: the Open Inference Protocol (KServe v2, what Triton speaks) over the Segmenter.

- ``tensors.py``  what a request must hold (the ``image`` tensor, the outputs asked for) and
                  the one-line 400 when it does not; no server library needed
- ``batcher.py``  dynamic batching of concurrent requests onto one Segmenter
- ``metrics.py``  the Prometheus series ``/metrics`` adds to KServe's own
- ``model.py``    the KServe model: load and warm, metadata with the card, infer
- ``server.py``   KServe's ModelServer (REST + gRPC), readiness, graceful SIGTERM

The runtime's lean ``[cpu]`` install imports none of this: ``pip install "fcnx[serve]"``.
"""
