# Copyright (c) Meta Platforms, Inc. and affiliates.
# All rights reserved.
#
# This source code is licensed under the BSD-style license found in the
# LICENSE file in the root directory of this source tree.
from pathlib import Path

TUNE_PATH = "tuner/_cli/tune.py"

ASSETS = Path(__file__).parent / "assets"
