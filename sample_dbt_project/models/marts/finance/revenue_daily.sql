select
    order_date,
    count(*) as orders,
    sum(amount) as revenue,
    sum(case when status = 'returned' then amount else 0 end) as returned_revenue
from {{ ref('orders') }}
where {{ fail_if_requested() }}
group by order_date
