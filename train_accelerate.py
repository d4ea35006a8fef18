#!/usr/bin/env python
"""Train BAFE-Net with Hugging Face Accelerate.

    accelerate launch train_accelerate.py --dataset densesirst --output-dir outputs/bafenet-r18
    accelerate launch --multi_gpu --num_processes 2 --mixed_precision bf16 train_accelerate.py ...

Same code as ``bafenet train``; ``python train_accelerate.py --help`` lists every option.
"""

import sys

from bafenet.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
