"""The look shared by every figure: colours, fonts, margins, and a placeholder that says what will appear."""

from __future__ import annotations

import textwrap

import plotly.graph_objects as go

BASE_COLOR = "#9aa5b1"
ROUND_COLOR = "#3b6fd8"
ACCEPT_COLOR = "#1f9d55"
TARGET_COLOR = "#e07b1a"
FONT = dict(family="Inter, system-ui, sans-serif", size=12)


def style(fig: go.Figure, title: str, height: int) -> go.Figure:
    """The common look: white template, compact margins, legend above the plot."""
    fig.update_layout(
        template="plotly_white",
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=14)),
        height=height,
        margin=dict(l=50, r=20, t=80, b=40),
        font=FONT,
        legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0.0),
    )
    return fig


def wrap_title(text: str, width: int = 28) -> str:
    """A subplot title broken into lines of about `width` characters, so neighbouring titles never overlap
    on a narrow screen (plotly does not wrap them)."""
    return "<br>".join(textwrap.wrap(text, width)) or text


def subtitle(text: str) -> str:
    return f"<br><span style='font-size:12px;color:#555'>{text}</span>"


def placeholder(message: str, height: int = 320, width: int = 60) -> go.Figure:
    """An empty figure that says what will appear here (or what went wrong), wrapped to `width` characters."""
    lines = [part for line in message.replace("<br>", "\n").split("\n") for part in textwrap.wrap(line, width) or [""]]
    fig = go.Figure()
    fig.add_annotation(
        text="<br>".join(lines), x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=14)
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return style(fig, "", height)
