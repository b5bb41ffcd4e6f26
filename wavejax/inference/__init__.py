"""A trained run put to use: load it (`model`), classify long recordings (`timeline`), export it
(`export`)."""
