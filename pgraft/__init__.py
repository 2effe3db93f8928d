"""pgraft: GRAFT and P-GRAFT, rejection-sampling fine-tuning of diffusion models, with exact answers to check.

The package stays light to import; models, rewards and plots load their heavy dependencies when used.
"""

__version__ = "0.1.0"
