#!/usr/bin/env python
"""Publish a BAFE-Net model folder, a DenseSIRST dataset folder and/or the VOC metric to the Hugging Face Hub.

Same code as ``bafenet push`` (see ``bafenet.commands.push``). Examples::

    python push_to_hub.py --dataset-dir densesirst --dataset-repo my-org/densesirst \\
        --model-dir outputs/bafenet-r18 --model-repo my-org/bafenet-r18 --dry-run
    HF_TOKEN=hf_... python push_to_hub.py --model-dir outputs/bafenet-r18 --model-repo my-org/bafenet-r18
    HF_TOKEN=hf_... python push_to_hub.py --metric-repo my-org/densesirst_voc   # evaluate.load("my-org/densesirst_voc")
"""

import sys

from bafenet.commands.push import main

if __name__ == "__main__":
    sys.exit(main())
