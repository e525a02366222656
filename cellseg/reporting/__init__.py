"""Comparative reports of finished runs: records -> grouped statistics -> tables, figures, gallery, one page."""
