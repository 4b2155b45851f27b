"""Maps the design card's top-level folders onto the one import namespace ``safeguards``.

Each folder has its own ``package-dir`` entry (``core/`` installs as ``safeguards.core`` and so
on); ``safeguards`` itself is a namespace with nothing at its top, so the repository root's
bootstrap (``dev.py``), build files and tests never ship and nothing generic lands in
site-packages. Subpackages are discovered so that adding a folder needs no edit here.
"""

from setuptools import find_packages, setup

TOP_LEVEL = ("core", "actors", "adapters", "regions", "ops", "simulations")

package_dir: dict[str, str] = {}
packages: list[str] = []
for top in TOP_LEVEL:
    package_dir[f"safeguards.{top}"] = top
    packages.append(f"safeguards.{top}")
    packages.extend(f"safeguards.{top}.{sub}" for sub in find_packages(top))

setup(package_dir=package_dir, packages=packages)
