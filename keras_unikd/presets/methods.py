"""The distillation methods, by name."""

# The paper's methods; every preset builds each of them (`build_distiller`).
METHODS = ("unikd", "dkd", "kd", "fitnet", "student")
