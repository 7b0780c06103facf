"""Quantized inference (DIT_QUANT, T5_QUANT): which modes exist and where they run (``modes``,
torch-free, read by the settings' system check), the weights' conversion at daemon start
(``apply``) and the bytes each rank holds (``memory``)."""
