"""The benchmark harness behind ``ps-lightning bench`` (`ps_lightning.harness.main`): every
method on the same splits and original models, several seeds, side by side with retraining.

It runs its steps through `ps_lightning.steps` and sits above the library: nothing in the
package imports it but the command (`ps_lightning.cli`). `methods` names what runs, `chain`
plans, caches and runs each seed's steps, `selection` chooses each method's values on a grid,
`tables` writes what was measured.
"""
