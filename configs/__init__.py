"""The configs, one file per algorithm: ``configs/<name>.py`` defines ``get_config(preset)``.

They ship inside the package as ``m2m_jax.configs``, so a pip-installed m2m_jax loads them by
name: ``m2m_jax.configlib.load('cnn', 'mnist5k')`` or ``--config=cnn:mnist5k`` on the command
line.
"""
