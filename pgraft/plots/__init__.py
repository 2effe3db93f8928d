"""Plots: pure functions from data (tensors, arrays, tables) to plotly figures. Nothing here imports gradio."""
