select
    touchpoints.channel,
    touchpoints.touchpoints,
    touchpoints.first_seen,
    round(touchpoints.touchpoints * 1.0 / sum(touchpoints.touchpoints) over (), 4) as share
from {{ ref('marketing_touchpoints') }} as touchpoints
where {{ fail_if_requested() }}
