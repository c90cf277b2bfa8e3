"""A cross-class confusion matrix of an instance model on mask (or box) IoU, with a background row and column.

Matching rule, per image, over the detections with score >= `score_threshold`:
1. same-class matches as COCOeval makes them at IoU >= `iou_threshold` (area "all"; see
   segpipe.evaluators.instance.overlaps): these are the diagonal, so at threshold 0 the diagonal holds AP50's true
   positives; detections matched to a crowd region are ignored (they are neither right nor wrong in COCO);
2. every detection still unmatched, in descending score order, takes the still-unmatched non-crowd GT of
   *another* class with the highest IoU >= `iou_threshold`: cell [GT class, detected class];
3. detections left over: row "background" (false positives on nothing); GTs left over: column "background"
   (missed). Rows are GT classes, columns detected classes.
Like ultralytics' detection ConfusionMatrix (https://docs.ultralytics.com/reference/utils/metrics/) it has a
background row and column; unlike it, step 1 keeps COCO's own matches, so the diagonal agrees with the report.
hotcoco 1.3's `COCOeval.confusion_matrix` gives the same cells except where (a) a detection matches a crowd
region (hotcoco: background row; here: left out, as COCOeval ignores it) or (b) an image has more than 100
detections (hotcoco caps per image; here per image and class, as COCOeval and the match records do).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from segpipe.evaluators.instance.overlaps import ImageOverlaps, coco_matches

BACKGROUND = "background"
DEFAULT_SCORE_THRESHOLD = 0.5
LABEL_COLUMN = "gt \\ detected"


def instance_confusion(
    overlaps: Sequence[ImageOverlaps], *, category_ids: Sequence[int], category_names: Sequence[str],
    score_threshold: float = DEFAULT_SCORE_THRESHOLD, iou_threshold: float = 0.5,
) -> pd.DataFrame:
    """Counts [K + 1, K + 1] as a table: first column the GT class (or background), then one column per class."""
    index = {int(c): k for k, c in enumerate(category_ids)}
    bg = len(category_ids)
    counts = np.zeros((bg + 1, bg + 1), dtype=np.int64)
    for o in overlaps:
        keep = np.flatnonzero(o.det_score >= score_threshold)
        # Dropping low scores leaves every class's score order intact, so COCO's greedy rule applies as is.
        det_gt = coco_matches(o.iou[keep], det_category=o.det_category[keep], gt_category=o.gt_category,
                              gt_crowd=o.gt_crowd, threshold=iou_threshold)
        gt_taken = o.gt_crowd.copy()  # crowd regions are never counted as objects
        det_done = det_gt >= 0
        for d in np.flatnonzero(det_done):
            g = det_gt[d]
            if not o.gt_crowd[g]:
                counts[index[int(o.gt_category[g])], index[int(o.det_category[keep[d]])]] += 1
            gt_taken[g] = True
        for d in np.argsort(-o.det_score[keep], kind="mergesort"):
            if det_done[d]:
                continue
            cat = int(o.det_category[keep[d]])
            cand = np.where(~gt_taken & (o.gt_category != cat), o.iou[keep[d]], -1.0)
            g = int(np.argmax(cand)) if len(cand) else -1
            if g >= 0 and cand[g] >= iou_threshold:
                gt_taken[g] = True
                counts[index[int(o.gt_category[g])], index[cat]] += 1
            else:
                counts[bg, index[cat]] += 1
        for g in np.flatnonzero(~gt_taken):
            counts[index[int(o.gt_category[g])], bg] += 1
    labels = [*map(str, category_names), BACKGROUND]
    table = pd.DataFrame(counts, columns=labels)
    table.insert(0, LABEL_COLUMN, labels)
    return table
