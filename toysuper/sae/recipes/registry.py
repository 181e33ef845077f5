"""The public registry of SAE recipes: built-ins and outside recipes go through the same door.

An outside recipe is recorded by its import path "module:Class" (`recipe_path`) wherever a name would
not be found in another process: an SAE's config.json, a sweep's rows, a Ray worker.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType

from .base import Recipe

_RECIPES: dict[str, Recipe] = {}
RECIPES = MappingProxyType(_RECIPES)  # every registered recipe by name (read-only: add one with `register_recipe`)
RESERVED = frozenset({"d_hidden", "d_sae", "n_instances", "recipe", "seed", "device"})  # names no option may take


def register_recipe(recipe_class: type) -> type:
    """File an instance of `recipe_class` under its `name`; returns the class, so it also serves as a decorator.

    A name taken already is refused (ValueError naming it), as are hyperparameters and options
    that share a name with each other or with an SAE argument.
    """
    if not (isinstance(recipe_class, type) and issubclass(recipe_class, Recipe)):
        raise TypeError(f"register_recipe takes a subclass of toysuper.sae.recipes.Recipe, got {recipe_class!r}")
    name = recipe_class.name
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{recipe_class.__qualname__}.name must be a Python identifier, got {name!r}")
    if name in _RECIPES:
        raise ValueError(f"a recipe named {name!r} is registered already ({recipe_path(_RECIPES[name])}); "
                         f"give {recipe_class.__qualname__} another name")
    clashes = (set(recipe_class.hyperparameters) & set(recipe_class.options)) | (
        (set(recipe_class.hyperparameters) | set(recipe_class.options)) & RESERVED)
    if clashes:
        raise ValueError(f"recipe {name!r}: hyperparameter or option name(s) {sorted(clashes)} clash with each other "
                         f"or with the SAE's own arguments {sorted(RESERVED)}")
    knob = recipe_class.sparsity_knob
    if knob is not None and knob not in recipe_class.hyperparameters:
        raise ValueError(f"recipe {name!r}: sparsity_knob {knob!r} is not one of its hyperparameters "
                         f"{sorted(recipe_class.hyperparameters)}")
    _RECIPES[name] = recipe_class()
    return recipe_class


def recipe_path(recipe: Recipe) -> str:
    """How another process finds `recipe`: its name for a built-in, "module:Class" for any other."""
    cls = type(recipe)
    return recipe.name if cls.__module__.startswith("toysuper.") else f"{cls.__module__}:{cls.__qualname__}"


def get_recipe(spec) -> Recipe:
    """The recipe `spec` names: a registered name, an import path "module:Class", a Recipe subclass or instance.

    A class found by path or given directly is registered if it is not yet (a name taken by another class
    is refused). ValueError naming `spec` (and the known names) when it cannot be found or imported.
    """
    if isinstance(spec, Recipe):
        spec = type(spec)
    if isinstance(spec, str):
        if spec in _RECIPES:
            return _RECIPES[spec]
        if ":" not in spec:
            raise ValueError(f"recipe must be one of {sorted(_RECIPES)} or an import path 'module:Class', "
                             f"got {spec!r}")
        module_name, _, class_name = spec.partition(":")
        try:
            found = importlib.import_module(module_name)
            for part in class_name.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError, ValueError) as error:
            raise ValueError(f"recipe {spec!r} cannot be imported ({type(error).__name__}: {error}); is its module "
                             f"on the Python path? Registered recipes: {sorted(_RECIPES)}") from error
        if not (isinstance(found, type) and issubclass(found, Recipe)):
            raise ValueError(f"recipe {spec!r} names {found!r}, not a subclass of toysuper.sae.recipes.Recipe")
        spec = found
    elif not (isinstance(spec, type) and issubclass(spec, Recipe)):
        raise TypeError(f"recipe must be a name, an import path 'module:Class' or a Recipe class, got {spec!r}")
    known = _RECIPES.get(spec.name)
    if known is None or type(known) is not spec:
        register_recipe(spec)
    return _RECIPES[spec.name]
