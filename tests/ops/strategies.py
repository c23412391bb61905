"""Hypothesis strategies shared by the op tests."""

from hypothesis import strategies as st


@st.composite
def conv_geometries(draw, max_batch=3, max_stride=3, max_filters=5):
    """A small convolution: shapes, strides, leading pads and the output size they give."""
    n = draw(st.integers(1, max_batch))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    c, o = draw(st.integers(1, 4)), draw(st.integers(1, max_filters))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    strides = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    pads = (draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)))
    out = (
        max(1, (h + pads[0] - kh) // strides[0] + 1),
        max(1, (w + pads[1] - kw) // strides[1] + 1),
    )
    return dict(
        x_shape=[n, h, w, c],
        w_shape=[kh, kw, c, o],
        strides=list(strides),
        pads=list(pads),
        size=list(out),
    )
