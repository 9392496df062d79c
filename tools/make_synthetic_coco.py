"""Write a small synthetic dataset (shapes on stuff backgrounds) in COCO-panoptic format.

python tools/make_synthetic_coco.py data/synthetic --split train2017 -n 64
python tools/make_synthetic_coco.py data/synthetic --split val2017 -n 16 --seed 1
"""

import sys

from ovseg.data.synthetic import main

if __name__ == "__main__":
    sys.exit(main())
