"""Drawing and tabulating predictions: palette, overlay + legend, label maps, segments tables."""

from ovseg.visualization.overlay import (
    LegendEntry,
    draw_legend,
    legend_entries,
    overlay,
    visualize,
)
from ovseg.visualization.palette import class_color, palette
from ovseg.visualization.segments import TASKS, label_map, segments_table

__all__ = [
    "TASKS",
    "LegendEntry",
    "class_color",
    "draw_legend",
    "label_map",
    "legend_entries",
    "overlay",
    "palette",
    "segments_table",
    "visualize",
]
