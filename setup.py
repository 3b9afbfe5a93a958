"""Ship the top-level recipes/ and configs/ folders inside the wheel as tuner.recipes / tuner.configs."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["tuner", "tuner.*"]) + ["tuner.recipes", "tuner.configs"],
    package_dir={"tuner.recipes": "recipes", "tuner.configs": "configs"},
)
