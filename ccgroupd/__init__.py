"""ccgroupd: keeps the Dagger engine and its build containers inside cgroup v2 limits."""

__version__ = "0.1.0"
