"""Reference scorer with pandas + pyproj: the fastest Python a user would write.

Reads a predictions CSV (IMG_ID, GT_LAT, GT_LON, PRED_LAT, PRED_LON) with `pandas.read_csv`,
computes WGS-84 geodesic distances (Karney, `pyproj.Geod(ellps="WGS84").inv`, vectorised over
numpy arrays), and prints accuracy with strict `<` at 1/25/200/750/2500 km, the median, and the
seconds spent importing, reading and scoring (perf_counter; the whole process is timed by the
caller). Writes nothing.
"""
import sys
import time

t_start = time.perf_counter()
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from pyproj import Geod  # noqa: E402

t0 = time.perf_counter()
df = pd.read_csv(sys.argv[1])
t1 = time.perf_counter()
geod = Geod(ellps="WGS84")
# inv takes (lons1, lats1, lons2, lats2) and returns (az12, az21, metres)
_, _, m = geod.inv(
    df["GT_LON"].to_numpy(), df["GT_LAT"].to_numpy(), df["PRED_LON"].to_numpy(), df["PRED_LAT"].to_numpy()
)
d = np.asarray(m) / 1000.0
acc = [100.0 * float(np.count_nonzero(d < t)) / len(d) for t in (1, 25, 200, 750, 2500)]
med = float(np.median(d))
t2 = time.perf_counter()
print("pandas+pyproj acc % (<):", " / ".join(f"{a:.4f}" for a in acc))
print("pandas+pyproj exact acc % (<):", " ".join(repr(a) for a in acc))
print(f"pandas+pyproj median km: {med:.4f}")
print(f"pandas+pyproj import s: {t0 - t_start:.2f}")
print(f"pandas+pyproj read s: {t1 - t0:.2f}")
print(f"pandas+pyproj score s: {t2 - t1:.2f}")
