"""The screens of the dashboard besides the main one: detail, triage, actions, help, picker, export."""

from .actions import EngineScreen, ExportScreen, PreviewScreen, Scope, ScopeScreen, start_action, start_export
from .detail import DetailScreen
from .help import HelpScreen
from .picker import PickerScreen
from .triage import GroupTasksScreen, TriageScreen

__all__ = [
    "DetailScreen",
    "TriageScreen",
    "GroupTasksScreen",
    "HelpScreen",
    "PickerScreen",
    "ExportScreen",
    "ScopeScreen",
    "EngineScreen",
    "PreviewScreen",
    "Scope",
    "start_action",
    "start_export",
]
