"""The ttsfleet worker: ChatTTS served by NVIDIA Triton (what every pod of a fleet runs).

Importing this package must stay cheap and torch-free: the operator imports pure modules from
here (text validation, the weights manifest format). Modules that need torch import it
themselves.
"""
