"""Training output: Lightning's product advert is dropped, its diagnostics are not."""

import logging


def test_lightning_tip_adverts_are_dropped_but_other_info_lines_pass(caplog):
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    import mmrwkv.training.trainer  # noqa: F401  (installs the filter)

    with caplog.at_level(logging.INFO):
        rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing litlogger")
        rank_zero_info("GPU available: False, used: False")
    messages = [r.getMessage() for r in caplog.records]
    assert "GPU available: False, used: False" in messages
    assert not any("litlogger" in m for m in messages)
