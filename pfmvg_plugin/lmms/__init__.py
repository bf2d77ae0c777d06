"""lmms-eval integration: zero-flag task discovery, our model classes, and the task-side library code.

Importing this package is light; lmms-eval, torch and transformers are imported only where they are used.
"""
