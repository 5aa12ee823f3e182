"""linstab: stability analysis of pre-trained residual networks by linearization."""
