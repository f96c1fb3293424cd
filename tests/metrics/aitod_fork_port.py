# ruff: noqa: N802, SIM201  (method names and conditions kept as in the original)
"""The AI-TOD cocoapi fork (jwwangchn/cocoapi-aitod, ``aitodpycocotools/cocoeval.py`` at its last
commit 44a230a, Simplified BSD licence) as a pycocotools ``COCOeval`` subclass, used as the
reference for rsvl's ``aitod`` preset.

The fork is pycocotools with different ``Params`` (maxDets 1/100/1500; areas all, verytiny, tiny,
small, medium), an ``evaluateImg`` that also stores the matched IoU (``dtIoUs``), an
``accumulate`` that adds optimal LRP, and a 19-number ``summarize``. Those three methods are
ported here line for line; ``np.float`` (removed from numpy) is ``float`` and prints are gone.
Its C ``bbIou`` is identical to pycocotools', so pycocotools' ``computeIoU`` is reused.
"""

from __future__ import annotations

import numpy as np
from pycocotools.cocoeval import COCOeval


class AitodCOCOeval(COCOeval):
    def __init__(self, cocoGt=None, cocoDt=None, iouType="bbox"):
        super().__init__(cocoGt, cocoDt, iouType)
        p = self.params
        p.maxDets = [1, 100, 1500]
        p.areaRng = [[0**2, 1e5**2], [0**2, 8**2], [8**2, 16**2], [16**2, 32**2], [32**2, 1e5**2]]
        p.areaRngLbl = ["all", "verytiny", "tiny", "small", "medium"]

    def evaluateImg(self, imgId, catId, aRng, maxDet):
        p = self.params
        if p.useCats:
            gt = self._gts[imgId, catId]
            dt = self._dts[imgId, catId]
        else:
            gt = [_ for cId in p.catIds for _ in self._gts[imgId, cId]]
            dt = [_ for cId in p.catIds for _ in self._dts[imgId, cId]]
        if len(gt) == 0 and len(dt) == 0:
            return None

        for g in gt:
            if g["ignore"] or (g["area"] < aRng[0] or g["area"] > aRng[1]):
                g["_ignore"] = 1
            else:
                g["_ignore"] = 0

        gtind = np.argsort([g["_ignore"] for g in gt], kind="mergesort")
        gt = [gt[i] for i in gtind]
        dtind = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in dtind[0:maxDet]]
        iscrowd = [int(o["iscrowd"]) for o in gt]
        ious = self.ious[imgId, catId][:, gtind] if len(self.ious[imgId, catId]) > 0 else self.ious[imgId, catId]

        T = len(p.iouThrs)
        G = len(gt)
        D = len(dt)
        gtm = np.zeros((T, G))
        dtm = np.zeros((T, D))
        gtIg = np.array([g["_ignore"] for g in gt])
        dtIg = np.zeros((T, D))
        dtIoU = np.zeros((T, D))
        if not len(ious) == 0:
            for tind, t in enumerate(p.iouThrs):
                for dind, d in enumerate(dt):
                    iou = min([t, 1 - 1e-10])
                    m = -1
                    for gind, _g in enumerate(gt):
                        if gtm[tind, gind] > 0 and not iscrowd[gind]:
                            continue
                        if m > -1 and gtIg[m] == 0 and gtIg[gind] == 1:
                            break
                        if ious[dind, gind] < iou:
                            continue
                        iou = ious[dind, gind]
                        m = gind
                    if m == -1:
                        continue
                    dtIg[tind, dind] = gtIg[m]
                    dtm[tind, dind] = gt[m]["id"]
                    gtm[tind, m] = d["id"]
                    dtIoU[tind, dind] = iou
        a = np.array([d["area"] < aRng[0] or d["area"] > aRng[1] for d in dt]).reshape((1, len(dt)))
        dtIg = np.logical_or(dtIg, np.logical_and(dtm == 0, np.repeat(a, T, 0)))
        return {
            "image_id": imgId,
            "category_id": catId,
            "aRng": aRng,
            "maxDet": maxDet,
            "dtIds": [d["id"] for d in dt],
            "gtIds": [g["id"] for g in gt],
            "dtMatches": dtm,
            "gtMatches": gtm,
            "dtScores": [d["score"] for d in dt],
            "gtIgnore": gtIg,
            "dtIgnore": dtIg,
            "dtIoUs": dtIoU,
        }

    def accumulate(self, p=None, with_lrp=True):
        if p is None:
            p = self.params
        p.catIds = p.catIds if p.useCats == 1 else [-1]
        T = len(p.iouThrs)
        R = len(p.recThrs)
        K = len(p.catIds) if p.useCats else 1
        A = len(p.areaRng)
        M = len(p.maxDets)
        precision = -np.ones((T, R, K, A, M))
        recall = -np.ones((T, K, A, M))
        scores = -np.ones((T, R, K, A, M))
        olrp_loc = -np.ones((K, A, M))
        olrp_fp = -np.ones((K, A, M))
        olrp_fn = -np.ones((K, A, M))
        olrp = -np.ones((K, A, M))
        lrp_opt_thr = -np.ones((K, A, M))

        _pe = self._paramsEval
        catIds = _pe.catIds if _pe.useCats else [-1]
        setK = set(catIds)
        setA = set(map(tuple, _pe.areaRng))
        setM = set(_pe.maxDets)
        setI = set(_pe.imgIds)
        k_list = [n for n, k in enumerate(p.catIds) if k in setK]
        m_list = [m for n, m in enumerate(p.maxDets) if m in setM]
        a_list = [n for n, a in enumerate(tuple(x) for x in p.areaRng) if a in setA]
        i_list = [n for n, i in enumerate(p.imgIds) if i in setI]
        I0 = len(_pe.imgIds)
        A0 = len(_pe.areaRng)
        for k, k0 in enumerate(k_list):
            Nk = k0 * A0 * I0
            for a, a0 in enumerate(a_list):
                Na = a0 * I0
                for m, maxDet in enumerate(m_list):
                    E = [self.evalImgs[Nk + Na + i] for i in i_list]
                    E = [e for e in E if e is not None]
                    if len(E) == 0:
                        continue
                    dtScores = np.concatenate([e["dtScores"][0:maxDet] for e in E])
                    inds = np.argsort(-dtScores, kind="mergesort")
                    dtScoresSorted = dtScores[inds]
                    dtm = np.concatenate([e["dtMatches"][:, 0:maxDet] for e in E], axis=1)[:, inds]
                    dtIg = np.concatenate([e["dtIgnore"][:, 0:maxDet] for e in E], axis=1)[:, inds]
                    dtIoU = np.concatenate([e["dtIoUs"][:, 0:maxDet] for e in E], axis=1)[:, inds]
                    gtIg = np.concatenate([e["gtIgnore"] for e in E])
                    npig = np.count_nonzero(gtIg == 0)
                    if npig == 0:
                        continue
                    tps = np.logical_and(dtm, np.logical_not(dtIg))
                    fps = np.logical_and(np.logical_not(dtm), np.logical_not(dtIg))

                    dtIoU = np.multiply(dtIoU, tps)
                    tp_sum = np.cumsum(tps, axis=1).astype(dtype=float)
                    fp_sum = np.cumsum(fps, axis=1).astype(dtype=float)
                    for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum, strict=True)):
                        tp = np.array(tp)
                        fp = np.array(fp)
                        nd = len(tp)
                        rc = tp / npig
                        pr = tp / (fp + tp + np.spacing(1))
                        q = np.zeros((R,))
                        ss = np.zeros((R,))
                        if nd:
                            recall[t, k, a, m] = rc[-1]
                        else:
                            recall[t, k, a, m] = 0
                        pr = pr.tolist()
                        q = q.tolist()
                        for i in range(nd - 1, 0, -1):
                            if pr[i] > pr[i - 1]:
                                pr[i - 1] = pr[i]
                        inds = np.searchsorted(rc, p.recThrs, side="left")
                        try:
                            for ri, pi in enumerate(inds):
                                q[ri] = pr[pi]
                                ss[ri] = dtScoresSorted[pi]
                        except IndexError:
                            pass
                        precision[t, :, k, a, m] = np.array(q)
                        scores[t, :, k, a, m] = np.array(ss)

                    if with_lrp:
                        tp_num = np.cumsum(tps[0, :])
                        fp_num = np.cumsum(fps[0, :])
                        fn_num = npig - tp_num
                        if tp_num.shape[0] > 0:
                            if tp_num[-1] > 0:
                                total_loc = tp_num - np.cumsum(dtIoU[0, :])
                                lrps = (total_loc / (1 - _pe.iouThrs[0]) + fp_num + fn_num) / (tp_num + fp_num + fn_num)
                                opt_pos_idx = np.argmin(lrps)
                                olrp[k, a, m] = lrps[opt_pos_idx]
                                olrp_loc[k, a, m] = total_loc[opt_pos_idx] / tp_num[opt_pos_idx]
                                olrp_fp[k, a, m] = fp_num[opt_pos_idx] / (tp_num[opt_pos_idx] + fp_num[opt_pos_idx])
                                olrp_fn[k, a, m] = fn_num[opt_pos_idx] / npig
                                lrp_opt_thr[k, a, m] = dtScoresSorted[opt_pos_idx]
                            else:
                                olrp_loc[k, a, m] = np.nan
                                olrp_fp[k, a, m] = np.nan
                                olrp_fn[k, a, m] = 1.0
                                olrp[k, a, m] = 1.0
                                lrp_opt_thr[k, a, m] = np.nan
                        else:
                            olrp_loc[k, a, m] = np.nan
                            olrp_fp[k, a, m] = np.nan
                            olrp_fn[k, a, m] = 1.0
                            olrp[k, a, m] = 1.0
                            lrp_opt_thr[k, a, m] = np.nan
        self.eval = {
            "params": p,
            "counts": [T, R, K, A, M],
            "precision": precision,
            "recall": recall,
            "scores": scores,
            "olrp_loc": olrp_loc,
            "olrp_fp": olrp_fp,
            "olrp_fn": olrp_fn,
            "olrp": olrp,
            "lrp_opt_thr": lrp_opt_thr,
        }

    def summarize(self):
        def _summarize(ap=1, iouThr=None, areaRng="all", maxDets=100, lrp_type=None):
            p = self.params
            aind = [i for i, aRng in enumerate(p.areaRngLbl) if aRng == areaRng]
            mind = [i for i, mDet in enumerate(p.maxDets) if mDet == maxDets]
            if ap == 1:
                s = self.eval["precision"]
                if iouThr is not None:
                    t = np.where(iouThr == p.iouThrs)[0]
                    s = s[t]
                s = s[:, :, :, aind, mind]
                mean_s = -1 if len(s[s > -1]) == 0 else np.mean(s[s > -1])
            elif ap == 0:
                s = self.eval["recall"]
                if iouThr is not None:
                    t = np.where(iouThr == p.iouThrs)[0]
                    s = s[t]
                s = s[:, :, aind, mind]
            else:
                if lrp_type == "oLRP":
                    s = self.eval["olrp"][:, aind, mind]
                if lrp_type == "oLRP_Localisation":
                    s = self.eval["olrp_loc"][:, aind, mind]
                if lrp_type == "oLRP_false_positive":
                    s = self.eval["olrp_fp"][:, aind, mind]
                if lrp_type == "oLRP_false_negative":
                    s = self.eval["olrp_fn"][:, aind, mind]
            idx = ~np.isnan(s)
            s = s[idx]
            mean_s = -1 if len(s[s > -1]) == 0 else np.mean(s[s > -1])
            return mean_s

        md = self.params.maxDets
        stats = np.zeros((19,))
        stats[0] = _summarize(1, maxDets=md[2])
        stats[1] = _summarize(1, iouThr=0.25, maxDets=md[2])
        stats[2] = _summarize(1, iouThr=0.5, maxDets=md[2])
        stats[3] = _summarize(1, iouThr=0.75, maxDets=md[2])
        stats[4] = _summarize(1, areaRng="verytiny", maxDets=md[2])
        stats[5] = _summarize(1, areaRng="tiny", maxDets=md[2])
        stats[6] = _summarize(1, areaRng="small", maxDets=md[2])
        stats[7] = _summarize(1, areaRng="medium", maxDets=md[2])
        stats[8] = _summarize(0, maxDets=md[0])
        stats[9] = _summarize(0, maxDets=md[1])
        stats[10] = _summarize(0, maxDets=md[2])
        stats[11] = _summarize(0, areaRng="verytiny", maxDets=md[2])
        stats[12] = _summarize(0, areaRng="tiny", maxDets=md[2])
        stats[13] = _summarize(0, areaRng="small", maxDets=md[2])
        stats[14] = _summarize(0, areaRng="medium", maxDets=md[2])
        stats[15] = _summarize(-1, iouThr=0.5, areaRng="all", maxDets=md[2], lrp_type="oLRP")
        stats[16] = _summarize(-1, iouThr=0.5, areaRng="all", maxDets=md[2], lrp_type="oLRP_Localisation")
        stats[17] = _summarize(-1, iouThr=0.5, areaRng="all", maxDets=md[2], lrp_type="oLRP_false_positive")
        stats[18] = _summarize(-1, iouThr=0.5, areaRng="all", maxDets=md[2], lrp_type="oLRP_false_negative")
        self.stats = stats


#: The fork's stats, in order, under rsvl's metric names.
STAT_NAMES = (
    "AP", "AP25", "AP50", "AP75", "APvt", "APt", "APs", "APm",
    "AR1", "AR100", "AR1500", "ARvt", "ARt", "ARs", "ARm",
    "oLRP", "oLRP_loc", "oLRP_fp", "oLRP_fn",
)  # fmt: skip
