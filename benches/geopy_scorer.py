"""Reference scorer with geopy: the way G3-style evaluation scripts compute accuracy.

Reads a predictions CSV (IMG_ID, GT_LAT, GT_LON, PRED_LAT, PRED_LON), computes
geopy.distance.geodesic (WGS-84, Karney) per row, and prints accuracy with strict `<` at
1/25/200/750/2500 km, the median, and the time spent reading and scoring.
"""
import csv
import statistics
import sys
import time

from geopy.distance import geodesic

t0 = time.perf_counter()
rows = []
with open(sys.argv[1], newline="") as f:
    for r in csv.DictReader(f):
        rows.append((float(r["GT_LAT"]), float(r["GT_LON"]), float(r["PRED_LAT"]), float(r["PRED_LON"])))
t1 = time.perf_counter()
d = [geodesic((a, b), (c, e)).km for a, b, c, e in rows]
t2 = time.perf_counter()
n = len(d)
acc = [100.0 * sum(1 for x in d if x < t) / n for t in (1, 25, 200, 750, 2500)]
print("geopy acc % (<):", " / ".join(f"{a:.4f}" for a in acc))
print(f"geopy median km: {statistics.median(d):.4f}")
print(f"geopy read s: {t1 - t0:.2f}")
print(f"geopy score s: {t2 - t1:.2f}")
print(f"geopy total s: {t2 - t0:.2f}")
