"""DenseSIRST + BAFE-Net, Hugging Face-native."""

__version__ = "0.1.0"

# Where the real DenseSIRST devkit lies in this project's workspace (tests and benchmarks only; never shipped).
DEFAULT_REAL_DEVKIT = "../shared/data/DenseSIRST/data/SIRSTdevkit"
