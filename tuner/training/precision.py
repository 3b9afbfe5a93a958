"""torchtune's ``torchtune.training.precision``: the module `tuner.devices` under that name.

The same module object, not a copy of its names, so that patching a name here (as torchtune's
tests patch ``verify_bf16_support``) changes what `get_dtype` calls.
"""

import sys

from tuner import devices

sys.modules[__name__] = devices
