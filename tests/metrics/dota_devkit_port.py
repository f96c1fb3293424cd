# ruff: noqa: SIM108, B007  (kept line for line as in the original)
"""A direct port of DOTA_devkit's ``dota_evaluation_task1.py`` (CAPTAIN-WHU/DOTA_devkit, MIT licence),
used as the reference for rsvl.metrics.dota.

Kept as close to the original as possible, line for line; the only changes:

* inputs are in memory (``{imagename: [objects]}`` and ``{classname: [(imagename, score, poly8)]}``)
  instead of label/result files, with the objects as ``parse_gt`` builds them;
* ``polyiou.iou_poly`` (C++) is replaced by shapely's exact polygon intersection with the same
  union formula (``|area(p)| + |area(q)| - inter``), exact for simple polygons;
* ``np.bool`` (removed from numpy) is ``bool``, and the debug prints are gone;
* the detection array is reshaped to ``(-1, 8)``, so a class without detections gives AP 0
  (the original indexes an empty 1-D array and raises).
"""

from __future__ import annotations

import numpy as np
from shapely.geometry import Polygon


def iou_poly(p, q) -> float:
    """Stand-in for ``polyiou.iou_poly`` on two 8-number quadrilaterals."""
    pp = Polygon(np.asarray(p, dtype=float).reshape(4, 2))
    qq = Polygon(np.asarray(q, dtype=float).reshape(4, 2))
    inter = pp.intersection(qq).area
    union = pp.area + qq.area - inter
    return inter / union


def voc_ap(rec, prec, use_07_metric=False):
    """ap = voc_ap(rec, prec, [use_07_metric])
    Compute VOC AP given precision and recall.
    If use_07_metric is true, uses the
    VOC 07 11 point method (default:False).
    """
    if use_07_metric:
        # 11 point metric
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.0
    else:
        # correct AP calculation
        # first append sentinel values at the end
        mrec = np.concatenate(([0.0], rec, [1.0]))
        mpre = np.concatenate(([0.0], prec, [0.0]))

        # compute the precision envelope
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])

        # to calculate area under PR curve, look for points
        # where X axis (recall) changes value
        i = np.where(mrec[1:] != mrec[:-1])[0]

        # and sum (\Delta recall) * prec
        ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return ap


def voc_eval(detections, recs, imagenames, classname, ovthresh=0.5, use_07_metric=False):
    """The devkit's ``voc_eval`` with the files replaced by ``detections`` (lines of the class's
    Task1 file as ``(imagename, confidence, poly8)``) and ``recs`` (``parse_gt`` per image)."""
    # extract gt objects for this class
    class_recs = {}
    npos = 0
    for imagename in imagenames:
        R = [obj for obj in recs[imagename] if obj["name"] == classname]
        bbox = np.array([x["bbox"] for x in R])
        difficult = np.array([x["difficult"] for x in R]).astype(bool)
        det = [False] * len(R)
        npos = npos + sum(~difficult)
        class_recs[imagename] = {"bbox": bbox, "difficult": difficult, "det": det}

    # read dets
    image_ids = [x[0] for x in detections]
    confidence = np.array([float(x[1]) for x in detections])
    BB = np.array([[float(z) for z in x[2]] for x in detections]).reshape(-1, 8)

    # sort by confidence
    sorted_ind = np.argsort(-confidence)

    ## note the usage only in numpy not for list
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]
    # go down dets and mark TPs and FPs
    nd = len(image_ids)
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R["bbox"].astype(float)

        ## compute det bb with each BBGT

        if BBGT.size > 0:
            # compute overlaps
            # intersection

            # 1. calculate the overlaps between hbbs, if the iou between hbbs are 0, the iou between obbs are 0, too.
            BBGT_xmin = np.min(BBGT[:, 0::2], axis=1)
            BBGT_ymin = np.min(BBGT[:, 1::2], axis=1)
            BBGT_xmax = np.max(BBGT[:, 0::2], axis=1)
            BBGT_ymax = np.max(BBGT[:, 1::2], axis=1)
            bb_xmin = np.min(bb[0::2])
            bb_ymin = np.min(bb[1::2])
            bb_xmax = np.max(bb[0::2])
            bb_ymax = np.max(bb[1::2])

            ixmin = np.maximum(BBGT_xmin, bb_xmin)
            iymin = np.maximum(BBGT_ymin, bb_ymin)
            ixmax = np.minimum(BBGT_xmax, bb_xmax)
            iymax = np.minimum(BBGT_ymax, bb_ymax)
            iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
            ih = np.maximum(iymax - iymin + 1.0, 0.0)
            inters = iw * ih

            # union
            uni = (
                (bb_xmax - bb_xmin + 1.0) * (bb_ymax - bb_ymin + 1.0)
                + (BBGT_xmax - BBGT_xmin + 1.0) * (BBGT_ymax - BBGT_ymin + 1.0)
                - inters
            )

            overlaps = inters / uni

            BBGT_keep_mask = overlaps > 0
            BBGT_keep = BBGT[BBGT_keep_mask, :]
            BBGT_keep_index = np.where(overlaps > 0)[0]

            def calcoverlaps(BBGT_keep, bb):
                overlaps = []
                for index, GT in enumerate(BBGT_keep):
                    overlap = iou_poly(BBGT_keep[index], bb)
                    overlaps.append(overlap)
                return overlaps

            if len(BBGT_keep) > 0:
                overlaps = calcoverlaps(BBGT_keep, bb)

                ovmax = np.max(overlaps)
                jmax = np.argmax(overlaps)
                jmax = BBGT_keep_index[jmax]

        if ovmax > ovthresh:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = 1
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0

    # compute precision recall
    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    rec = tp / float(npos)
    # avoid divide by zero in case the first detection matches a difficult
    # ground truth
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap = voc_ap(rec, prec, use_07_metric)

    return rec, prec, ap


def evaluate(recs, detections_by_class, imagenames, classnames, ovthresh=0.5, use_07_metric=True):
    """The devkit's ``main``: per-class AP and their mean over ``classnames``."""
    classaps = []
    map_ = 0
    for classname in classnames:
        _, _, ap = voc_eval(
            detections_by_class.get(classname, []), recs, imagenames, classname, ovthresh, use_07_metric
        )
        map_ = map_ + ap
        classaps.append(ap)
    map_ = map_ / len(classnames)
    return map_, classaps
