"""The drill's timeline: every request as a dot (time, outcome, serving site), the phases as shaded spans."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position

SITE_COLORS = {"dc1": "tab:blue", "dc2": "tab:green"}
ROWS = {("write", True): 3, ("read", True): 2, ("write", False): 1, ("read", False): 0}
ROW_LABELS = ["read failed", "write failed", "read ok", "write ok"]


def timeline(records, phases, path, title):
    """Write a PNG: x = seconds since the first request, y = outcome row, colour = serving site (red: failed)."""
    origin = min([r["t0"] for r in records] + [p["start"] for p in phases])
    fig, axis = plt.subplots(figsize=(14, 4.5), dpi=110)
    for index, phase in enumerate(phases):
        axis.axvspan(phase["start"] - origin, phase["end"] - origin, color="0.85" if index % 2 else "0.92", zorder=0)
        axis.text(
            phase["start"] - origin, 3.45 + 0.3 * (index % 2), phase["label"], fontsize=7, rotation=20, va="bottom"
        )
    for site, color in list(SITE_COLORS.items()) + [("", "tab:red")]:
        chosen = [r for r in records if (r["site"] == site if r["ok"] else site == "")]
        if chosen:
            axis.scatter(
                [r["t0"] - origin for r in chosen],
                [ROWS[(r["op"], r["ok"])] for r in chosen],
                s=6,
                color=color,
                label=f"served by {site}" if site else "failed",
                zorder=2,
            )
    axis.set_yticks(range(4), ROW_LABELS)
    axis.set_ylim(-0.5, 4.3)
    axis.set_xlabel("seconds since the load started")
    axis.set_title(title)
    axis.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
