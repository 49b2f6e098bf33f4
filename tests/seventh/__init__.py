"""A throwaway seventh provider, kept outside the package as a new provider's folder would be inside it
(``shared/pushpool/providers/<name>/``): its typed configuration, its base job template and its backend — nothing else.
``tests/unit/test_seventh_provider.py`` registers it with one line and runs pushpool's use-cases and the backend
contract on it, proving that adding a provider touches no use-case, no settings field and no CLI branch."""
