"""The folder of the ERC metric's `evaluate` module, `erc_metric.py`: `evaluate.load(magtkd_hf.metrics.ERC_METRIC_PATH)`
loads it by path (a package, so that the wheel ships the script like any module)."""
