"""Fixtures of the tests in a real napari viewer: the viewer, and the notifications a
user would read."""

import pytest


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def notes():
    """The messages of the notifications shown while the test runs."""
    from napari.utils.notifications import notification_manager

    seen = []

    def keep(notification):
        seen.append(str(notification.message))

    notification_manager.notification_ready.connect(keep)
    yield seen
    notification_manager.notification_ready.disconnect(keep)
