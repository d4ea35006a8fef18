"""DenseSIRST + BAFE-Net, Hugging Face-native."""

__version__ = "0.3.0"

# Where the real DenseSIRST devkit lies in this project's workspace (tests and benchmarks only; never shipped).
DEFAULT_REAL_DEVKIT = "../shared/data/DenseSIRST/data/SIRSTdevkit"

PAPER_URL = "https://arxiv.org/abs/2407.20078"
CITATION = """\
@article{xiao2024bafenet,
  title   = {Background Semantics Matter: Cross-Task Feature Exchange Network for Clustered Infrared Small Target
             Detection With Sky-Annotated Dataset},
  author  = {Xiao, Mengxuan and Dai, Qun and Zhu, Yiming and Guo, Kehua and Wang, Huan and Shu, Xiangbo and
             Yang, Jian and Dai, Yimian},
  journal = {arXiv preprint arXiv:2407.20078},
  year    = {2024}
}"""
