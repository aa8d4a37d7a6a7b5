"""What the notebooks display: figures (plain matplotlib Figures, never shown here) and widgets."""
