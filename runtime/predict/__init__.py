"""Running folders of images through a model: the Segmenter (one image in, one mask out,
at its own size) and the predict job around it (inputs, output folder, failures,
resume, summary), run on local threads or on Ray Data."""
