"""Built-in class lists of torchvision's published weight families, in the models' output order.

A model card (`class_table = "coco"`) or `--class-table coco` selects one instead of listing 91 names.
The lists are the `meta["categories"]` of the torchvision weight enums (tests compare them live):
https://github.com/pytorch/vision/blob/main/torchvision/models/_meta.py
"""

from __future__ import annotations

# Mask R-CNN / Faster R-CNN `COCO_V1` weights: 91 label slots, COCO's original category ids 1..90 by index,
# with `N/A` where the 2014 paper's ids were never used and `__background__` at 0.
COCO_CLASSES: tuple[str, ...] = (
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse",
    "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag",
    "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)

# DeepLabV3 / FCN / LRASPP `COCO_WITH_VOC_LABELS_V1` weights: the 20 Pascal VOC classes after background.
VOC_CLASSES: tuple[str, ...] = (
    "__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

CLASS_TABLES: dict[str, tuple[str, ...]] = {"coco": COCO_CLASSES, "voc": VOC_CLASSES}
CLASS_TABLE_NAMES: tuple[str, ...] = tuple(CLASS_TABLES)
# Slots that name no class at all (torchvision's unused COCO ids): always dropped, never mapped.
PLACEHOLDER_NAMES: frozenset[str] = frozenset({"N/A"})
