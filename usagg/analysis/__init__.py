"""Analysis of a run store or an imported tidy results table: Δ versus a baseline, statistics, tables, figures, report.

Never imports torch; scipy and matplotlib are imported inside the functions that need them
so that `import usagg.cli.app` stays light.
"""
