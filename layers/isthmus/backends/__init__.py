"""Backend composition above the pure routing layer: what a routed request is sent to.

``control_plane`` turns a route (isthmus.routing over the control-plane snapshot) into a backend; ``cloud``
puts published cloud aliases in front of it; ``default_agent`` is the one-agent fallback; ``pool`` calls the
node agents of a pool; ``first_byte`` is the one "try in order until one answers" helper they all use.
"""
