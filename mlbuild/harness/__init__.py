"""The benchmark harness: everything a builder needs to turn datasets into tensors and run
an ONNX model under the MLPerf LoadGen.

Modules import only the standard library at top level; numpy, Pillow, onnxruntime,
pycocotools and the LoadGen are imported inside the functions that use them, because
builders run in a subprocess whose ``sys.path`` holds a locked environment.

- :mod:`.coco`: the COCO-80 class table and COCO-format annotation helpers.
- :mod:`.images`: image decoding as ``cv2.imread`` (EXIF orientation, CMYK), bilinear
  resizing, preprocessing as parameters (``Preprocess``, ``PRESETS``) and the parallel tensor writer.
- :mod:`.decoders`: the output decoder protocol and registry (``yolox``, ``boxes-scores-labels``,
  ``ultralytics``), sample geometry, the accuracy-log record.
- :mod:`.postprocess`: YOLOX grid decode + NMS, RetinaNet output conversion (the reference).
- :mod:`.sut`: the ONNX Runtime session, QSL and SUT driven by the LoadGen.
- :mod:`.accuracy`: ``mlperf_log_accuracy.json`` -> COCOeval mAP.
- :mod:`.logs`: parsers for ``mlperf_log_summary.txt`` and ``mlperf_log_detail.txt``.
- :mod:`.system`: a description of the machine a run ran on.
- :mod:`.report`: the self-contained ``report.html``.
- :mod:`.summary`: ``load_result`` / ``format_summary`` for ``mlbuild results show``.
- :mod:`.run`: the ``mlperf-run`` builder's body (a whole run, or an accuracy/performance part).
- :mod:`.runparams`: the run parameters' table (``mlperf-run`` and ``mlperf-result``).
- :mod:`.provenance`: the ``provenance`` block of ``result.json``.
- :mod:`.assemble`: the ``mlperf-result`` builder's body: a run target's output from its parts.
"""
