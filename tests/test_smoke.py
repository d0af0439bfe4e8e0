def test_import():
    import memapi  # noqa: F401
