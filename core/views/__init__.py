"""Figure builders for the pages: they return figures and never render them."""
