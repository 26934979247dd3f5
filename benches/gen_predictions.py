"""Write N synthetic per-image predictions (seeded) as CSV: IMG_ID, GT_LAT, GT_LON, PRED_LAT, PRED_LON.

Truth is uniform on the sphere; the prediction is the truth moved by a log-uniform distance
(0.1 to 20,000 km scale) in a random direction, wrapped to valid coordinates.
"""
import math
import random
import sys

n = int(sys.argv[1])
out = sys.argv[2]
rng = random.Random(42)
with open(out, "w", newline="") as f:
    f.write("IMG_ID,GT_LAT,GT_LON,PRED_LAT,PRED_LON\n")
    for i in range(n):
        lat = math.degrees(math.asin(2 * rng.random() - 1))
        lon = rng.uniform(-180, 180)
        s = 10 ** rng.uniform(-3, 2.2)  # degrees
        plat = max(-90.0, min(90.0, lat + s * rng.gauss(0, 1)))
        plon = (lon + s * rng.gauss(0, 1) + 180) % 360 - 180
        f.write(f"{i}.jpg,{lat:.6f},{lon:.6f},{plat:.6f},{plon:.6f}\n")
