"""Textual widgets of the operator TUI, grouped by pane."""
