"""Every file name segpipe writes or reads, in one place: the dataset, predictions and report layouts.

A converted dataset dir (`segpipe convert`):

    instances.json          COCO (ids per segpipe.converters.coco); image `file_name` relative to `image_root`
    dataset.json            {"format", "image_root" (absolute), "source", "options"}: where images live
    semantic/<stem>.png     single-channel label maps (0 background, 255 ignore)
    semantic/classes.txt    semantic class names in index order
    heads.json              oxford-pet only: head boxes from the XMLs
    conversion_report.csv   file, severity, code, message

A predictions dir (`segpipe infer`): results.json (COCO results), semantic/<stem>.png, meta.json,
inference_report.csv. A report dir (`segpipe evaluate`): <table>.csv + .parquet, header.json, report.html.

This module imports nothing, so converters, evaluators and the pipeline all take their names from here.
"""

from __future__ import annotations

# Label maps: pixel value = class index, 0 = background, IGNORE_INDEX = not scored (the value of the
# Pascal VOC border and of torchvision's/mmseg's `ignore_index` default).
IGNORE_INDEX = 255

# Dataset dir
INSTANCES_FILE = "instances.json"
DATASET_META_FILE = "dataset.json"
SEMANTIC_DIR = "semantic"
SEMANTIC_CLASSES_FILE = "classes.txt"
HEADS_FILE = "heads.json"
CONVERSION_REPORT_FILE = "conversion_report.csv"

# Predictions dir (SEMANTIC_DIR as above)
RESULTS_FILE = "results.json"
META_FILE = "meta.json"
INFERENCE_REPORT_FILE = "inference_report.csv"

# Report dir
REPORT_HEADER_FILE = "header.json"
REPORT_PAGE_FILE = "report.html"
