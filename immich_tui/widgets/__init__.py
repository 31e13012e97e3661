"""Textual widgets of the operator TUI, one module per area of the screen.

`pane` is what every tab shares; `overview`, `library`, `offsite`, `jobs` (with its bounded `logview`)
and `database` are the five tabs; `dialogs` holds the confirmation and help screens, `restore_dialogs`
the two restores. A pane is handed the `Services` it reads and posts a message for what only the app
can do, so the widgets stay thin, work on their own in tests, and none of them imports the app.
"""
