"""The main screen's widgets."""

from .engine_list import EngineList
from .filter_bar import FilterBar
from .pane_tabs import PaneTabs
from .status_bar import StatusBar, StatusInfo
from .task_table import COLUMNS, TaskTable

__all__ = ["EngineList", "FilterBar", "PaneTabs", "StatusBar", "StatusInfo", "TaskTable", "COLUMNS"]
