"""A literal port of the official VisDrone2018-DET MATLAB toolkit (VisDrone/VisDrone2018-DET-toolkit):
``saveAnnoRes.m``, ``dropObjectsInIgr.m``, ``createIntImg.m``, ``calcAccuracy.m``, ``evalRes.m``,
``compOas.m`` and ``VOCap.m``, used as the reference for rsvl.metrics.visdrone_eval.

Loops and 1-based indices are kept as in MATLAB (indices are shifted by one only when reading
arrays). MATLAB's ``sort`` is stable, ``round`` rounds halves away from zero, ``mean2`` of an empty
selection is NaN (returned as such). Results are percentages, as the toolkit prints them.

Rows are ``[x y w h score category]`` (ground truth: score 1 = evaluated, 0 = ignored; category 0
= ignored region, 11 = others); detections must be given in result-file order.
"""

from __future__ import annotations

import math

import numpy as np


def mround(x: float) -> float:
    return math.copysign(math.floor(abs(x) + 0.5), x)


def create_int_img(img: np.ndarray) -> np.ndarray:
    height, width = img.shape
    int_img = img.astype(float).copy()
    for i in range(2, height + 1):
        int_img[i - 1, 0] = int_img[i - 1, 0] + int_img[i - 2, 0]
    for j in range(2, width + 1):
        int_img[0, j - 1] = int_img[0, j - 1] + int_img[0, j - 2]
    for i in range(2, height + 1):
        for j in range(2, width + 1):
            int_img[i - 1, j - 1] = (
                int_img[i - 1, j - 1] + int_img[i - 2, j - 1] + int_img[i - 1, j - 2] - int_img[i - 2, j - 2]
            )
    return int_img


def _left(boxes: np.ndarray, int_igr_map: np.ndarray, img_height: int, img_width: int) -> list[int]:
    idx_left = []
    for i in range(boxes.shape[0]):
        pos = [max(1, mround(v)) for v in boxes[i, 0:4]]
        x = max(1, min(img_width, pos[0]))
        y = max(1, min(img_height, pos[1]))
        w = pos[2]
        h = pos[3]
        tl = int_igr_map[int(y) - 1, int(x) - 1]
        tr = int_igr_map[int(y) - 1, int(min(img_width, x + w)) - 1]
        bl = int_igr_map[int(max(1, min(img_height, y + h))) - 1, int(x) - 1]
        br = int_igr_map[int(max(1, min(img_height, y + h))) - 1, int(min(img_width, x + w)) - 1]
        igr_val = tl + br - tr - bl
        if igr_val / (h * w) < 0.5:
            idx_left.append(i)
    return idx_left


def drop_objects_in_igr(gt: np.ndarray, det: np.ndarray, img_height: int, img_width: int):
    idx_fr = gt[:, 5] != 0
    curgt = gt[idx_fr, :]
    idx_igr = gt[:, 5] == 0
    igr_region = np.maximum(1, gt[idx_igr, 0:4])
    if igr_region.size:
        igr_map = np.zeros((img_height, img_width))
        for j in range(igr_region.shape[0]):
            x1, y1, w, h = (int(v) for v in igr_region[j])
            rows = range(y1, min(img_height, y1 + h) + 1)
            cols = range(x1, min(img_width, x1 + w) + 1)
            for r in rows:
                for c in cols:
                    igr_map[r - 1, c - 1] = 1
        int_igr_map = create_int_img(igr_map)
        curgt = curgt[_left(curgt, int_igr_map, img_height, img_width), :]
        det = det[_left(det, int_igr_map, img_height, img_width), :]
    return curgt, det


def save_anno_res(all_gt_raw, all_det_raw, heights, widths):
    allgt, alldet = [], []
    for gt_raw, det_raw, h, w in zip(all_gt_raw, all_det_raw, heights, widths, strict=True):
        newgt, det = drop_objects_in_igr(gt_raw, det_raw, h, w)
        gt = newgt.copy()
        gt[newgt[:, 4] == 0, 4] = 1
        gt[newgt[:, 4] == 1, 4] = 0
        allgt.append(gt)
        alldet.append(det)
    return allgt, alldet


def comp_oas(dt: np.ndarray, gt: np.ndarray, ig: np.ndarray) -> np.ndarray:
    m, n = dt.shape[0], gt.shape[0]
    oa = np.zeros((m, n))
    de = dt[:, [0, 1]] + dt[:, [2, 3]]
    da = dt[:, 2] * dt[:, 3]
    ge = gt[:, [0, 1]] + gt[:, [2, 3]]
    ga = gt[:, 2] * gt[:, 3]
    for i in range(m):
        for j in range(n):
            w = min(de[i, 0], ge[j, 0]) - max(dt[i, 0], gt[j, 0])
            if w <= 0:
                continue
            h = min(de[i, 1], ge[j, 1]) - max(dt[i, 1], gt[j, 1])
            if h <= 0:
                continue
            t = w * h
            u = da[i] if ig[j] else da[i] + ga[j] - t
            oa[i, j] = t / u
    return oa


def eval_res(gt0: np.ndarray, dt0: np.ndarray, thr: float, mul: bool = False):
    gt0 = gt0.reshape(-1, 5)
    dt0 = dt0.reshape(-1, 5)
    nd, ng = dt0.shape[0], gt0.shape[0]
    ord_ = np.argsort(-dt0[:, 4], kind="stable")  # sort(..., 'descend') is stable
    dt0 = dt0[ord_, :]
    ord_ = np.argsort(gt0[:, 4], kind="stable")
    gt0 = gt0[ord_, :]
    gt = gt0.copy()
    dt = np.concatenate([dt0, np.zeros((nd, 1))], axis=1)
    gt[:, 4] = -gt[:, 4]
    oa = comp_oas(dt[:, 0:4], gt[:, 0:4], gt[:, 4] == -1)
    for d in range(1, nd + 1):
        bst_oa = thr
        bstg = 0
        bstm = 0
        for g in range(1, ng + 1):
            m = gt[g - 1, 4]
            if m == 1 and not mul:
                continue
            if bstm != 0 and m == -1:
                break
            if oa[d - 1, g - 1] < bst_oa:
                continue
            bst_oa = oa[d - 1, g - 1]
            bstg = g
            bstm = 1 if m == 0 else -1
        g = bstg
        m = bstm
        if m == -1:
            dt[d - 1, 5] = m
        elif m == 1:
            gt[g - 1, 4] = m
            dt[d - 1, 5] = m
    return gt, dt


def voc_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def calc_accuracy(num_imgs, allgt, alldet, max_dets_list=(1, 10, 100, 500), thresholds=None, classes=range(1, 11)):
    """``calcAccuracy.m``; returns (AP_all, AP_50, AP_75, [AR per maxDets], per-class AP rows)."""
    thresholds = np.linspace(0.5, 0.95, 10) if thresholds is None else thresholds
    n_cls = max(classes)
    AP = np.zeros((n_cls, len(thresholds)))
    AR = np.zeros((n_cls, len(thresholds), len(max_dets_list)))
    eval_class = []
    for id_class in classes:
        for id_img in range(num_imgs):
            gt = allgt[id_img]
            if np.count_nonzero(gt[:, 5] == id_class):
                eval_class.append(id_class)
        for x, thr in enumerate(thresholds):
            rec = prec = tp = idrank = det_match = None
            for y, max_dets in enumerate(max_dets_list):
                gt_match = []
                det_match = []
                for id_img in range(num_imgs):
                    gt = allgt[id_img]
                    det = alldet[id_img]
                    idx_gt_cur = gt[:, 5] == id_class
                    idx_det_cur = det[0 : min(det.shape[0], max_dets), 5] == id_class
                    gt0 = gt[idx_gt_cur, 0:5]
                    dt0 = det[0 : min(det.shape[0], max_dets)][idx_det_cur, 0:5]
                    gt1, dt1 = eval_res(gt0, dt0, thr)
                    gt_match.extend(gt1[:, 4].tolist())
                    det_match.extend(dt1[:, 4:6].tolist())
                det_match = np.array(det_match).reshape(-1, 2)
                idrank = np.argsort(-det_match[:, 0], kind="stable")
                tp = np.cumsum(det_match[idrank, 1] == 1)
                rec = tp / max(1, len(gt_match))
                if rec.size:
                    AR[id_class - 1, x, y] = np.max(rec) * 100
            fp = np.cumsum(det_match[idrank, 1] == 0)
            prec = tp / np.maximum(1, fp + tp)
            AP[id_class - 1, x] = voc_ap(rec, prec) * 100
    rows = [c - 1 for c in eval_class]

    def mean2(a: np.ndarray) -> float:
        return float(np.mean(a)) if a.size else float("nan")

    ap_all = mean2(AP[rows, :])
    ap_50 = mean2(AP[rows, 0])
    ap_75 = mean2(AP[rows, 5]) if len(thresholds) > 5 else float("nan")
    ars = [mean2(AR[rows, :, y]) for y in range(len(max_dets_list))]
    return ap_all, ap_50, ap_75, ars, AP
