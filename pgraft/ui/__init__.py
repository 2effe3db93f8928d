"""The Gradio app: a thin layer that lays out components and maps the library's events to updates.

Only this package imports gradio.
"""
