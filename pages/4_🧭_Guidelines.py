"""Guidelines: from a practitioner's situation to a recommended method, with the evidence it rests on."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.shared import results_cache, widgets
from tlcore import plots
from tlcore.data.resolution import input_size_for
from tlcore.errors import TLError
from tlcore.guidelines import DECIDING, DOMAINS, GPUS, STRENGTH_LABELS, TUNING_TIMES, Situation, advise
from tlcore.planning import spec_fingerprint

widgets.page_setup("Guidelines", "🧭", heading="🧭 Feature extraction or fine-tuning?")
st.caption("Answer four questions about your data and your budget. The answer names a method and a configuration, "
           "says why (each reason cites a published finding or your own runs), projects what every option would "
           "cost, and offers the cheap pilot that would confirm it on your images.")

tracker = widgets.tracker()
runner = widgets.runner()


@st.cache_data(show_spinner=False, ttl=60)
def machine_speed(uri: str, backbone: str, version: int):
    from tlcore.guidelines import machine_speed as pace

    try:
        return pace(widgets.tracker(), results_cache.runs("tradeoffs"), backbone)
    except Exception:  # an unreadable store: the page already says so; the pace is simply unknown
        return None


@st.cache_resource(show_spinner="Measuring this machine: a forward pass and a training step...")
def calibrated_speed(backbone: str):
    from tlcore.guidelines import calibrate_speed

    return calibrate_speed(backbone)


# ---------------------------------------------------------------------------------------------
# The four questions

left, right = st.columns([1, 1], gap="large")
with left:
    with st.container(border=True):
        st.subheader("1 · Your labelled data")
        mode = st.radio("Describe it by", ["Picking the dataset", "Typing the numbers"], horizontal=True,
                        key="g_mode", help="A dataset is counted for you; the pilot needs one to run on.")
        dataset, check = None, None
        if mode == "Picking the dataset":
            dataset, _, check = widgets.dataset_picker("g_dataset")
            counted = check is not None and check.ok and check.num_classes and check.num_images
            default_spc = max(1, check.num_images // check.num_classes) if counted else 20
            default_classes = int(check.num_classes) if counted else 10
            if counted:
                st.caption(f"{check.num_images:,} images in {check.num_classes} classes: about {default_spc} per "
                           "class. Lower it to what you will label or use for training.")
        else:
            default_spc, default_classes = 20, 10
        c1, c2 = st.columns(2)
        spc = c1.number_input("Labelled images per class", min_value=1, max_value=100_000, value=default_spc,
                              key=f"g_spc_{dataset or 'typed'}")
        n_classes = c2.number_input("Classes", min_value=2, max_value=100_000, value=default_classes,
                                    key=f"g_classes_{dataset or 'typed'}")
    with st.container(border=True):
        st.subheader("2 · How close are your images to everyday photos?")
        domain = st.selectbox("Your images", list(DOMAINS), format_func=lambda k: f"{DOMAINS[k].label} · e.g. "
                              f"{DOMAINS[k].example}", key="g_domain",
                              help="Pretrained backbones saw everyday photos (ImageNet). Far domains change which "
                                   "layers are worth training.")
        deployment_shift = st.checkbox("Deployed images will differ from the training images (another hospital, "
                                       "camera, season...)", key="g_shift")
with right:
    with st.container(border=True):
        st.subheader("3 · Compute budget")
        devices = ["this_machine", *GPUS]
        device = st.selectbox("Where it runs", devices, key="g_device",
                              format_func=lambda k: f"This machine ({widgets.hardware_line()})" if k == "this_machine"
                              else GPUS[k].label)
        limit = st.radio("Limit", ["No limit", "Hours", "kWh"], horizontal=True, key="g_limit")
        budget = None
        if limit != "No limit":
            budget = st.number_input(f"Budget ({limit})", min_value=0.001, value=24.0 if limit == "Hours" else 5.0,
                                     key="g_budget")
        row = widgets.backbone_picker("g_backbone")
        epochs = st.number_input("Fine-tuning epochs at most", min_value=1, max_value=1000, value=40, key="g_epochs",
                                 help="Early stopping usually ends sooner; the projection is an upper bound.")
    with st.container(border=True):
        st.subheader("4 · Time for hyperparameter search")
        tuning = st.radio("How long can you tune?", list(TUNING_TIMES), format_func=TUNING_TIMES.get,
                          horizontal=True, key="g_tuning")

native = check.native_size if check is not None and check.ok else None
size = input_size_for(native, int(row["input_size"])) if not row.get("fixed_input_size") else int(row["input_size"])

# ---------------------------------------------------------------------------------------------
# The answer: evidence, pace, projection and recommendation in one call

try:
    runs = results_cache.runs("tradeoffs")
    quanta_runs = results_cache.runs("quanta")
    ranking_runs = results_cache.runs("ranking")
except Exception as exc:  # an unreadable store: the generic rules still answer
    widgets.show_error(exc)
    runs = quanta_runs = ranking_runs = pd.DataFrame()

# this machine's pace from its finished jobs (or measured on request); a named GPU's comes from its spec sheet
speed = None
if device == "this_machine":
    speed = machine_speed(tracker.uri, row["name"], widgets.results_version()) or st.session_state.get(
        f"g_calibrated_{row['name']}")
try:
    with st.spinner("Counting FLOPs..."):
        advice = advise(Situation(
            samples_per_class=int(spc), num_classes=int(n_classes), domain=domain, device=device,
            budget_hours=float(budget) if limit == "Hours" else None,
            budget_kwh=float(budget) if limit == "kWh" else None, tuning_time=tuning,
            deployment_shift=bool(deployment_shift), backbone=row["name"], dataset=dataset, epochs=int(epochs),
            resolution=size if size != int(row["input_size"]) else None), tracker.uri, runs=runs,
            quanta_runs=quanta_runs, speed=speed, ranking_runs=ranking_runs)
except Exception as exc:
    widgets.show_error(exc)
    st.stop()
rec, evidence = advice.recommendation, advice.evidence


st.divider()
st.header("Recommendation")
st.success(f"**{rec.title}**")
hint = advice.backbone_suggestion
if hint is not None:
    chosen = "" if hint.backbone in (None, row["name"]) else f" You picked {row['name']} above."
    st.info(f"**Backbone to try first:** {hint.text}{chosen}  \n*Strength: measured proxy (a training-free score on "
            "your images, not an accuracy); it suggests a backbone and never decides the method.*")
    for left in hint.left_out:
        st.caption(f"Left out: {left}.")
    widgets.page_link("ranking", "See the ranking")
c1, c2 = st.columns(2)
with c1:
    st.markdown("**Expected accuracy**")
    st.write(rec.accuracy_note)
with c2:
    st.markdown("**Projected cost on your whole labelled set**")
    st.write(advice.cost_text)
    if advice.speed is None:
        st.caption("Time and energy need this machine's pace: run one job of this backbone, or measure it now.")
        if st.button("Measure this machine (about 10 s)", key="g_calibrate"):
            try:
                st.session_state[f"g_calibrated_{row['name']}"] = calibrated_speed(row["name"])
            except Exception as exc:
                widgets.show_error(exc)
            else:
                st.rerun()
    elif advice.over_budget is not None:
        over = advice.over_budget
        (st.warning if over else st.caption)("Over your budget." if over else "Within your budget.")

if rec.caution:
    st.warning(rec.caution, icon="⚠️")

STRENGTH_BADGES = {"strong": ":green-badge[strong]", "medium": ":blue-badge[medium]", "weak": ":orange-badge[weak]",
                   "prior": ":gray-badge[prior]", "projection": ":violet-badge[cost]"}
st.subheader("Why")
for reason in rec.reasons:
    src = reason.source
    st.markdown(f"- {STRENGTH_BADGES.get(reason.strength, reason.strength)} {reason.text}  \n  "
                f"<small>Source: {src.citation}</small>", unsafe_allow_html=True)
st.caption("Strength of each reason: " + "; ".join(STRENGTH_LABELS.values()) + ". Measured evidence of strong or "
           "medium strength decides before published findings; weak evidence is shown and never decides.")
with st.expander("The sources and what each one found"):
    for src in advice.cited_sources:
        st.markdown(f"**{src.citation}**: {src.finding}")

st.subheader("Alternatives")
table = advice.alternatives_table()
if not table.empty:
    st.dataframe(table, hide_index=True, width="stretch")
with st.expander("Assumptions behind the projection"):
    for line in advice.projection.assumptions:
        st.markdown(f"- {line}")

# ---------------------------------------------------------------------------------------------
# Evidence from the user's runs

st.subheader("Evidence from your runs")
if advice.store_error:
    st.error(f"The results store could not be read ({advice.store_error}); the answer rests on published findings.")
if evidence is None:
    st.info("Your store has no finished feature-extraction, fine-tuning or QUANTA runs yet, so the answer rests on "
            "published findings only. The pilot below measures your own; `python -m tlcore examples` runs small "
            "ones on the embedded digits.")
else:
    for item in evidence.items:
        badge = STRENGTH_BADGES.get(item.strength, item.strength)
        st.markdown(f"- {badge} {item.text}" + ("" if item.used else f" *Not used: {item.why_not}.*"))
    if evidence.curves is not None and not evidence.curves.empty:
        st.caption(f"Learning curves of the closest runs: {evidence.dataset} · {evidence.backbone} (95% intervals; "
                   "hollow points rest on weak runs)")
        st.plotly_chart(plots.learning_curve_figure(evidence.curves), key="g_curves",
                        config=plots.figure_config("guideline-evidence"))
    if evidence.comparison is not None and evidence.comparison.strength not in DECIDING:
        st.caption("These runs are weak evidence for your situation: they are shown, not used.")
    results_cache.link_to_page("tradeoffs", "All curves on the Trade-offs page", "📈")

# ---------------------------------------------------------------------------------------------
# The pilot

st.subheader("Run the pilot")
if not dataset or check is None or not check.ok:
    st.info("Pick your dataset in step 1 to run the pilot on it.")
else:
    c1, c2 = st.columns([1, 2])
    resolution = c1.number_input("Image size for the pilot (px)", min_value=16, max_value=1024,
                                 value=int(advice.situation.resolution or row["input_size"]),
                                 key=f"g_pilot_resolution_{dataset}",
                                 help="Smaller is faster; tiny images default to 64 px, the size the projection "
                                      "assumes.")
    try:
        specs = advice.pilot(dataset, int(resolution))
    except TLError as exc:
        widgets.show_error(exc)
        specs = []
    if specs:
        fe, ft = specs
        c2.markdown(f"- Feature extraction at {', '.join(map(str, fe.samples_per_class))} samples per class, "
                    f"{fe.splits} draws each\n- Fine-tuning, configuration {ft.params.configuration}, at "
                    f"{', '.join(map(str, ft.samples_per_class))} samples per class on the same draws, up to "
                    f"{ft.params.epochs} epochs with early stopping")
        if st.button("▶ Run the pilot", type="primary", key="g_pilot"):
            queued = []
            try:
                for spec in specs:
                    queued.append(runner.submit(spec, token=f"pilot-{spec_fingerprint(spec)}").job.number)
            except TLError as exc:
                widgets.show_error(exc)
            if queued:
                st.session_state["g_pilot_flash"] = queued
        if st.session_state.get("g_pilot_flash"):
            numbers = ", ".join(f"#{n}" for n in st.session_state["g_pilot_flash"])
            st.success(f"Queued as jobs {numbers}. Their runs appear on the Trade-offs page as they finish; the "
                       "walkthrough then uses them as evidence.")
            results_cache.link_to_page("run", "Watch them on the Run page", "🧪")
