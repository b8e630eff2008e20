//! Reports: `results.json`, the comparison table, and `report.html` (self-contained inline SVG).
