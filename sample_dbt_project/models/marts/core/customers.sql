with orders as (
    select * from {{ ref('stg_orders') }}
),

payments as (
    select order_id, sum(amount) as amount
    from {{ ref('stg_payments') }}
    group by order_id
),

customer_orders as (
    select
        orders.customer_id,
        min(orders.order_date) as first_order,
        max(orders.order_date) as most_recent_order,
        count(*) as number_of_orders,
        coalesce(sum(payments.amount), 0) as lifetime_value
    from orders
    left join payments using (order_id)
    group by orders.customer_id
)

select
    customers.customer_id,
    customers.first_name,
    customers.last_name,
    case when customers.country in ('GB', 'NL', 'CH') then 'EMEA' else 'AMER' end as region,
    customer_orders.first_order,
    customer_orders.most_recent_order,
    coalesce(customer_orders.number_of_orders, 0) as number_of_orders,
    coalesce(customer_orders.lifetime_value, 0) as lifetime_value
from {{ ref('stg_customers') }} as customers
left join customer_orders using (customer_id)
where {{ fail_if_requested() }}
