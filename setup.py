"""Maps the design card's top-level folders onto the one import namespace ``safeguards``.

``core/`` installs as ``safeguards.core`` and so on; nothing generic lands at the top of
site-packages. Subpackages are discovered so that adding a folder needs no edit here.
"""

from setuptools import find_packages, setup

TOP_LEVEL = ("core", "actors", "adapters", "regions", "ops", "simulations")

packages = ["safeguards"]
for top in TOP_LEVEL:
    packages.append(f"safeguards.{top}")
    packages.extend(f"safeguards.{top}.{sub}" for sub in find_packages(top))

setup(package_dir={"safeguards": "."}, packages=packages)
